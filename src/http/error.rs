//! The one place where errors become HTTP responses: RFC 9457 problem documents with the
//! contract's stable `code`s.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::FieldError;
use crate::service::AuthError;
use crate::store::StoreError;

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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Auth(AuthError::Store(e))
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(errors: Vec<FieldError>) -> Self {
        ApiError::Auth(AuthError::Validation(errors))
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    code: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    /// Status, stable code, human sentence.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use AuthError as A;
        let s = |status, code, detail: &str| (status, code, detail.to_owned());
        match self {
            ApiError::Auth(e) => match e {
                A::Validation(_) => s(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "The request body has invalid fields.",
                ),
                A::EmailTaken => s(
                    StatusCode::CONFLICT,
                    "email_taken",
                    "An account with this email already exists.",
                ),
                A::InvalidCredentials => s(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "The email or password is wrong.",
                ),
                A::InvalidToken => s(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "The access token is missing or invalid.",
                ),
                A::TokenExpired => s(
                    StatusCode::UNAUTHORIZED,
                    "token_expired",
                    "The access token has expired; refresh it.",
                ),
                A::SessionRevoked => s(
                    StatusCode::UNAUTHORIZED,
                    "session_revoked",
                    "This session was revoked or logged out.",
                ),
                A::InvalidRefreshToken => s(
                    StatusCode::UNAUTHORIZED,
                    "invalid_refresh_token",
                    "The refresh token is unknown or malformed.",
                ),
                A::RefreshTokenExpired => s(
                    StatusCode::UNAUTHORIZED,
                    "refresh_token_expired",
                    "The refresh token or its session has expired.",
                ),
                A::RefreshTokenReused => s(
                    StatusCode::UNAUTHORIZED,
                    "refresh_token_reused",
                    "This refresh token was already used; the session has been revoked.",
                ),
                A::SessionNotFound => s(StatusCode::NOT_FOUND, "session_not_found", "No such session."),
                A::CsrfFailed => s(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "Cookie-authenticated requests need an X-CSRF-Token header equal to the CSRF cookie.",
                ),
                A::Overloaded => s(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "The server is busy; try again shortly.",
                ),
                A::AccountLocked(_) => s(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many failed sign-ins for this account; try again later.",
                ),
                A::Store(StoreError::Unavailable(_)) => s(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "The database is unavailable; try again shortly.",
                ),
                A::Store(_) | A::KeyAtRest { .. } | A::Internal(_) => s(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Something went wrong on our side.",
                ),
            },
            ApiError::Malformed(why) => (StatusCode::BAD_REQUEST, "malformed_request", (*why).to_owned()),
            ApiError::PayloadTooLarge => s(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large.",
            ),
            ApiError::RequestTimeout => s(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time.",
            ),
            ApiError::NotFound => s(StatusCode::NOT_FOUND, "not_found", "No such route."),
            ApiError::MethodNotAllowed => s(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This route does not accept that method.",
            ),
            ApiError::RateLimited(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many attempts; retry in {secs} s."),
            ),
            ApiError::Panic => s(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
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
            && matches!(code, "invalid_token" | "token_expired" | "session_revoked")
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
