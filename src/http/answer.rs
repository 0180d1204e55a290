//! The answers that carry tokens or a person's data: a token response (with the cookies of
//! cookie transport), a sign-in's answer (tokens, or the second step's challenge), and the
//! rule that such answers are never cached. One place, for every flow that opens or renews a
//! session (`auth`, `email`, `mfa`, `passkeys`, `account`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::cookies::{set_grant_cookies, set_mfa_cookie};
use crate::domain::{SessionId, Timestamp, UserId};
use crate::service::{LoginOutcome, MfaChallenge, TokenGrant, UserView};

// Static header values: a `&str` would be checked and copied into a new buffer per answer.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A JSON answer no cache may keep.
pub(super) fn no_store(body: impl Serialize) -> Response {
    ([(header::CACHE_CONTROL, NO_STORE)], Json(body)).into_response()
}

/// [`no_store`] for JSON rendered earlier.
pub(super) fn no_store_rendered(json: Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, JSON), (header::CACHE_CONTROL, NO_STORE)],
        json,
    )
        .into_response()
}

/// [`no_store`] with another status than `200`.
pub(super) fn with_status(status: StatusCode, body: impl Serialize) -> Response {
    (status, no_store(body)).into_response()
}

/// A user as the API shows one.
#[derive(Serialize, ToSchema)]
pub(super) struct User<'a> {
    #[schema(value_type = String, format = Uuid)]
    id: UserId,
    /// Trimmed and lower-cased.
    #[schema(value_type = String, format = Email)]
    email: &'a str,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    /// Profile data the user edits (`PATCH /v1/auth/me`). Absent from `GET /v1/auth/me`
    /// unless asked for (`?include=metadata`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    user_metadata: Option<&'a serde_json::Value>,
    /// Data administrators set (read-only here); absent where `user_metadata` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    app_metadata: Option<&'a serde_json::Value>,
    /// The address was proved by a mailed link.
    email_verified: bool,
}

impl<'a> From<&'a UserView> for User<'a> {
    fn from(u: &'a UserView) -> Self {
        User {
            id: u.id,
            email: &u.email,
            created_at: u.created_at,
            user_metadata: u.metadata.as_ref().map(|m| &m.user_metadata),
            app_metadata: u.metadata.as_ref().map(|m| &m.app_metadata),
            email_verified: u.email_verified,
        }
    }
}

/// The token response. A cookie-transport session gets its tokens as cookies instead, and
/// the CSRF token in the body.
#[derive(Serialize, ToSchema)]
pub(super) struct TokenResponse<'a> {
    /// The access JWT (absent in cookie transport: it is the `tessera_at` cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    access_token: Option<&'a str>,
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
    /// The new refresh token, `tsr_...` (absent in cookie transport: it is the `tessera_rt`
    /// cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^tsr_")]
    refresh_token: Option<&'a str>,
    /// Seconds until the session ends if nothing more happens.
    refresh_token_expires_in: i64,
    #[schema(value_type = String, format = Uuid)]
    session_id: SessionId,
    user: User<'a>,
    /// Cookie transport only: the value of the `tessera_csrf` cookie, to send as
    /// `X-CSRF-Token` on unsafe requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    csrf_token: Option<&'a str>,
}

pub(super) fn token_response(grant: &TokenGrant, cookie_secure: bool) -> Response {
    let is_cookie_session = grant.csrf_token.is_some();
    let body = TokenResponse {
        access_token: (!is_cookie_session).then_some(grant.access_token.as_str()),
        token_type: "Bearer",
        expires_in: grant.access_expires_in,
        refresh_token: (!is_cookie_session).then_some(grant.refresh_token.expose()),
        refresh_token_expires_in: grant.refresh_expires_in,
        session_id: grant.session_id,
        user: User::from(&grant.user),
        csrf_token: grant.csrf_token.as_deref(),
    };
    // Tokens must never sit in a cache (RFC 6749 §5.1).
    let mut response = (
        [(header::CACHE_CONTROL, NO_STORE), (header::PRAGMA, NO_CACHE)],
        Json(body),
    )
        .into_response();
    if let Some(csrf) = &grant.csrf_token {
        set_grant_cookies(response.headers_mut(), grant, csrf, cookie_secure);
    }
    response
}

/// The answer of a sign-in (password or link) for an account with a second factor: no
/// tokens, no session; finish with `POST /v1/auth/mfa/verify`.
#[derive(Serialize, ToSchema)]
pub(super) struct MfaRequired<'a> {
    /// Always `true`.
    mfa_required: bool,
    /// Opaque, single-use: send it to `POST /v1/auth/mfa/verify`.
    #[schema(value_type = String)]
    challenge: &'a str,
    /// Seconds the challenge stays valid.
    expires_in: i64,
    /// What the account can prove: `totp`, `passkey`, `recovery_code`.
    #[schema(value_type = Vec<String>)]
    methods: &'a [&'static str],
}

fn mfa_required_response(challenge: &MfaChallenge, cookie_secure: bool) -> Response {
    let body = MfaRequired {
        mfa_required: true,
        challenge: &challenge.challenge,
        expires_in: challenge.expires_in,
        methods: &challenge.methods,
    };
    let mut response = (
        [(header::CACHE_CONTROL, NO_STORE), (header::PRAGMA, NO_CACHE)],
        Json(body),
    )
        .into_response();
    if let Some(browser) = &challenge.browser_cookie {
        set_mfa_cookie(
            response.headers_mut(),
            browser.clone(),
            std::time::Duration::from_secs(challenge.expires_in.unsigned_abs()),
            cookie_secure,
        );
    }
    response
}

/// What a sign-in answers with `200`: a token response, or, for an account with a second
/// factor, `mfa_required` and a challenge.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the two bodies; never built.
pub(super) enum LoginAnswer<'a> {
    Tokens(TokenResponse<'a>),
    MfaRequired(MfaRequired<'a>),
}

/// A sign-in's answer: tokens, or the second step's challenge.
pub(super) fn login_response(outcome: &LoginOutcome, cookie_secure: bool) -> Response {
    match outcome {
        LoginOutcome::Tokens(grant) => token_response(grant, cookie_secure),
        LoginOutcome::MfaRequired(challenge) => mfa_required_response(challenge, cookie_secure),
    }
}
