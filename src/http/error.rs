//! The one place where errors become HTTP responses: RFC 9457 problem documents with the
//! contract's stable `code`s.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::FieldError;
use crate::service::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Body is not JSON, not an object, or not declared as JSON.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("request body not sent in time")]
    RequestTimeout,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("rate limited; retry after {0} s")]
    RateLimited(u64),
    #[error("internal error")]
    Panic,
}

impl From<Vec<FieldError>> for ApiError {
    fn from(errors: Vec<FieldError>) -> Self {
        ApiError::Auth(AuthError::Validation(errors))
    }
}

// Every code the contract (`../shared/API.md`) names, plus `request_timeout`,
// `service_unavailable` and `internal_error`, which it leaves to the implementation, and
// `forbidden` (the admin API, beyond the contract). The
// OpenAPI document's enum is generated from this one; `tests/api/openapi.rs` compares it with
// the contract's.
/// The stable, machine-readable part of a problem: match on this, not on `title` or `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    ValidationFailed,
    MalformedRequest,
    PayloadTooLarge,
    EmailTaken,
    InvalidCredentials,
    InvalidToken,
    TokenExpired,
    SessionRevoked,
    InvalidRefreshToken,
    RefreshTokenExpired,
    RefreshTokenReused,
    CsrfFailed,
    /// Authenticated but not allowed (the admin API): no hint of what exists.
    Forbidden,
    SessionNotFound,
    InvalidEmailToken,
    EmailTokenExpired,
    EmailLinkOtherBrowser,
    EmailNotVerified,
    /// Passkeys are off on this server (no usable WebAuthn relying party).
    PasskeysDisabled,
    /// The account has no passkey with this id.
    PasskeyNotFound,
    /// The passkey ceremony is unknown or was answered already: start a new one.
    PasskeyCeremonyInvalid,
    /// The passkey ceremony's time ran out: start a new one.
    PasskeyCeremonyExpired,
    /// The credential or assertion is malformed or fails verification.
    PasskeyInvalid,
    /// The credential or assertion was made for another origin or relying party id.
    PasskeyWrongOrigin,
    /// No account has this passkey.
    PasskeyUnknown,
    /// The authenticator's signature counter went backwards (possibly a cloned key).
    PasskeyCounterRegressed,
    /// This passkey is registered already.
    PasskeyAlreadyRegistered,
    MfaChallengeInvalid,
    MfaChallengeExpired,
    MfaChallengeOtherBrowser,
    InvalidMfaCode,
    MfaCodeReplayed,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    ReauthenticationRequired,
    SecondFactorRequired,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    ServiceUnavailable,
    InternalError,
}

/// An RFC 9457 problem document, as every error is answered (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Problem<'a> {
    /// Always `about:blank`: `code` says what happened.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "about:blank")]
    kind: &'static str,
    /// The status's reason phrase.
    #[schema(value_type = String, example = "Unauthorized")]
    title: &'a str,
    #[schema(example = 401)]
    status: u16,
    code: ProblemCode,
    /// A human-readable sentence (not for machines: match on `code`).
    detail: String,
    /// With `validation_failed` only: every field that was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldErrorBody>>)]
    errors: Option<&'a [FieldError]>,
}

// The JSON `crate::domain::FieldError` serializes to, described here because the domain type
// knows nothing of HTTP or OpenAPI.
/// One invalid field of a `validation_failed` problem.
#[derive(ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)] // Never built.
pub(crate) struct FieldErrorBody {
    #[schema(example = "email")]
    field: String,
    #[schema(example = "must be an email address")]
    message: String,
}

impl ApiError {
    /// Status, stable code, human sentence.
    fn parts(&self) -> (StatusCode, ProblemCode, String) {
        use AuthError as A;
        use ProblemCode as C;
        let s = |status, code: ProblemCode, detail: &str| (status, code, detail.to_owned());
        match self {
            ApiError::Auth(e) => match e {
                A::Validation(_) => s(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    C::ValidationFailed,
                    "The request has invalid fields (see errors).",
                ),
                A::EmailTaken => s(
                    StatusCode::CONFLICT,
                    C::EmailTaken,
                    "An account with this email already exists.",
                ),
                A::InvalidCredentials => s(
                    StatusCode::UNAUTHORIZED,
                    C::InvalidCredentials,
                    "The email or password is wrong.",
                ),
                A::InvalidToken => s(
                    StatusCode::UNAUTHORIZED,
                    C::InvalidToken,
                    "The access token is missing or invalid.",
                ),
                A::TokenExpired => s(
                    StatusCode::UNAUTHORIZED,
                    C::TokenExpired,
                    "The access token has expired; refresh it.",
                ),
                A::SessionRevoked => s(
                    StatusCode::UNAUTHORIZED,
                    C::SessionRevoked,
                    "This session was revoked or logged out.",
                ),
                A::InvalidRefreshToken => s(
                    StatusCode::UNAUTHORIZED,
                    C::InvalidRefreshToken,
                    "The refresh token is unknown or malformed.",
                ),
                A::RefreshTokenExpired => s(
                    StatusCode::UNAUTHORIZED,
                    C::RefreshTokenExpired,
                    "The refresh token or its session has expired.",
                ),
                A::RefreshTokenReused => s(
                    StatusCode::UNAUTHORIZED,
                    C::RefreshTokenReused,
                    "This refresh token was already used; the session has been revoked.",
                ),
                A::SessionNotFound => s(StatusCode::NOT_FOUND, C::SessionNotFound, "No such session."),
                A::UserNotFound => s(StatusCode::NOT_FOUND, C::NotFound, "No such user."),
                A::CsrfFailed => s(
                    StatusCode::FORBIDDEN,
                    C::CsrfFailed,
                    "Cookie-authenticated requests need an X-CSRF-Token header equal to the CSRF cookie.",
                ),
                A::Forbidden => s(StatusCode::FORBIDDEN, C::Forbidden, "You may not do this."),
                A::Overloaded => s(
                    StatusCode::SERVICE_UNAVAILABLE,
                    C::ServiceUnavailable,
                    "The server is busy; try again shortly.",
                ),
                A::AccountLocked(_) => s(
                    StatusCode::TOO_MANY_REQUESTS,
                    C::RateLimited,
                    "Too many failed sign-ins for this account; try again later.",
                ),
                A::InvalidEmailToken => s(
                    StatusCode::BAD_REQUEST,
                    C::InvalidEmailToken,
                    "This link is not valid: it was already used, replaced by a newer one, or never issued.",
                ),
                A::EmailLinkOtherBrowser => s(
                    StatusCode::BAD_REQUEST,
                    C::EmailLinkOtherBrowser,
                    "This sign-in link was asked for in another browser: open it there, or ask for a new one here.",
                ),
                A::EmailTokenExpired => s(
                    StatusCode::BAD_REQUEST,
                    C::EmailTokenExpired,
                    "This link has expired; ask for a new one.",
                ),
                A::EmailNotVerified => s(
                    StatusCode::FORBIDDEN,
                    C::EmailNotVerified,
                    "Confirm your email address first: follow the link we mailed you.",
                ),
                A::MfaChallengeInvalid => s(
                    StatusCode::UNAUTHORIZED,
                    C::MfaChallengeInvalid,
                    "The sign-in challenge is unknown or already used; sign in again.",
                ),
                A::MfaChallengeExpired => s(
                    StatusCode::UNAUTHORIZED,
                    C::MfaChallengeExpired,
                    "The sign-in challenge has expired; sign in again.",
                ),
                A::MfaChallengeOtherBrowser => s(
                    StatusCode::UNAUTHORIZED,
                    C::MfaChallengeOtherBrowser,
                    "Finish signing in in the browser where it started.",
                ),
                A::InvalidMfaCode => s(
                    StatusCode::UNAUTHORIZED,
                    C::InvalidMfaCode,
                    "The code is wrong.",
                ),
                A::MfaCodeReplayed => s(
                    StatusCode::UNAUTHORIZED,
                    C::MfaCodeReplayed,
                    "This code was already used; wait for the next one.",
                ),
                A::MfaAlreadyEnabled => s(
                    StatusCode::CONFLICT,
                    C::MfaAlreadyEnabled,
                    "Two-step verification with an authenticator app is already on.",
                ),
                A::MfaNotEnabled => s(
                    StatusCode::CONFLICT,
                    C::MfaNotEnabled,
                    "There is no such second factor (or no enrolment to confirm).",
                ),
                A::ReauthenticationRequired => s(
                    StatusCode::FORBIDDEN,
                    C::ReauthenticationRequired,
                    "Sign in again (POST /v1/auth/reauthenticate) to make this change.",
                ),
                A::SecondFactorRequired => s(
                    StatusCode::FORBIDDEN,
                    C::SecondFactorRequired,
                    "This role needs a second factor: sign in with one, or reauthenticate with one (POST /v1/auth/reauthenticate).",
                ),
                A::LinkSigninDisabled => s(
                    StatusCode::NOT_FOUND,
                    C::NotFound,
                    "Sign-in links are not enabled on this server.",
                ),
                A::FeedDisabled => s(
                    StatusCode::NOT_FOUND,
                    C::NotFound,
                    "The revocation feed is not enabled on this server.",
                ),
                A::PasskeysDisabled => s(
                    StatusCode::NOT_FOUND,
                    C::PasskeysDisabled,
                    "Passkeys are not enabled on this server (it needs a domain: see TESSERA_WEBAUTHN_RP_ID).",
                ),
                A::PasskeyNotFound => s(StatusCode::NOT_FOUND, C::PasskeyNotFound, "No such passkey."),
                A::PasskeyCeremonyInvalid => s(
                    StatusCode::BAD_REQUEST,
                    C::PasskeyCeremonyInvalid,
                    "This passkey ceremony is unknown or was already used; start again.",
                ),
                A::PasskeyCeremonyExpired => s(
                    StatusCode::BAD_REQUEST,
                    C::PasskeyCeremonyExpired,
                    "This passkey ceremony has expired; start again.",
                ),
                A::PasskeyInvalid(_) => s(
                    StatusCode::BAD_REQUEST,
                    C::PasskeyInvalid,
                    "The passkey's answer is malformed or could not be verified.",
                ),
                A::PasskeyWrongOrigin => s(
                    StatusCode::BAD_REQUEST,
                    C::PasskeyWrongOrigin,
                    "The passkey's answer was made for another site (origin or relying party id).",
                ),
                A::PasskeyUnknown => s(
                    StatusCode::UNAUTHORIZED,
                    C::PasskeyUnknown,
                    "This passkey is not registered to any account.",
                ),
                A::PasskeyCounterRegressed => s(
                    StatusCode::UNAUTHORIZED,
                    C::PasskeyCounterRegressed,
                    "This passkey's signature counter went backwards; it may have been copied. Sign in another way.",
                ),
                A::PasskeyAlreadyRegistered => s(
                    StatusCode::CONFLICT,
                    C::PasskeyAlreadyRegistered,
                    "This passkey is already registered.",
                ),
                e @ A::Store(_) if e.is_unavailable() => s(
                    StatusCode::SERVICE_UNAVAILABLE,
                    C::ServiceUnavailable,
                    "The database is unavailable; try again shortly.",
                ),
                A::Store(_) | A::KeyAtRest { .. } | A::Internal(_) => s(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    C::InternalError,
                    "Something went wrong on our side.",
                ),
            },
            ApiError::Malformed(why) => (StatusCode::BAD_REQUEST, C::MalformedRequest, (*why).to_owned()),
            ApiError::PayloadTooLarge => s(
                StatusCode::PAYLOAD_TOO_LARGE,
                C::PayloadTooLarge,
                "The request body is too large.",
            ),
            ApiError::RequestTimeout => s(
                StatusCode::REQUEST_TIMEOUT,
                C::RequestTimeout,
                "The request body did not arrive in time.",
            ),
            ApiError::NotFound => s(StatusCode::NOT_FOUND, C::NotFound, "No such route."),
            ApiError::MethodNotAllowed => s(
                StatusCode::METHOD_NOT_ALLOWED,
                C::MethodNotAllowed,
                "This route does not accept that method.",
            ),
            ApiError::RateLimited(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                C::RateLimited,
                format!("Too many attempts; retry in {secs} s."),
            ),
            ApiError::Panic => s(
                StatusCode::INTERNAL_SERVER_ERROR,
                C::InternalError,
                "Something went wrong on our side.",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.parts();
        if status.is_server_error() {
            // The cause goes to the log, never to the client.
            tracing::error!(error = %self, ?self, "request failed");
        }
        let errors = match &self {
            ApiError::Auth(AuthError::Validation(errors)) => Some(errors.as_slice()),
            _ => None,
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail,
            errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED
            && matches!(
                code,
                ProblemCode::InvalidToken | ProblemCode::TokenExpired | ProblemCode::SessionRevoked
            )
        {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited(secs) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Auth(AuthError::AccountLocked(wait)) = &self {
            // Whole seconds, rounded up: a client that waits exactly this long gets in.
            let secs = wait.as_millis().div_ceil(1000).max(1);
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
