//! `/v1/auth/*`: thin handlers that parse input, call the service and shape the response.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::{login_response, token_response, with_status, LoginAnswer, TokenResponse, User};
use super::cookies::{clear_cookies, RequestCookies};
use super::error::ApiError;
use super::extract::{bearer, rate_limit, Authenticated, Client, Fields, JsonBody};
use super::AppState;
use crate::service::{AuthError, LogoutOutcome, LogoutScope, Transport};

// The body `register` reads. Handlers read bodies field by field (`Fields`), so that every
// wrong field is reported at once, in the contract's words; these `*Request` types describe
// those bodies for the OpenAPI document and are never deserialized.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)] // Unknown fields are refused (422), each by name.
#[allow(dead_code)]
pub(super) struct RegisterRequest {
    /// Trimmed, validated, then lower-cased.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 1024 Unicode characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Profile data: a JSON object of at most 4096 bytes.
    #[schema(value_type = Option<Object>, nullable = false)]
    user_metadata: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RegisterResponse<'a> {
    user: User<'a>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "auth",
    summary = "Create an account",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account was created (a verification link is mailed to it).", body = RegisterResponse),
        (status = 202, description = "With `TESSERA_REQUIRE_VERIFIED_EMAIL`: the same answer whether or not the address had an account (a new one gets a verification link, an existing one's owner a notice).", body = RegisterPending),
        (status = 400, description = "`malformed_request`"),
        (status = 408, description = "`request_timeout`"),
        (status = 409, description = "`email_taken`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP)"),
        (status = 503, description = "`service_unavailable`: password hashing or the database is overloaded"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.register_limit, "register", &client)?;
    let mut f = Fields::new(&body);
    f.only(&["email", "password", "user_metadata"]);
    let email = f.required_str("email");
    let password = f.required_str("password");
    let user_metadata = f.optional_object("user_metadata");
    f.finish()?;
    if state.service.requires_verified_email() {
        let email = state
            .service
            .register_quietly(email, password, user_metadata, &client)
            .await?;
        return Ok(register_pending(email.as_str()));
    }
    let user = state
        .service
        .register(email, password, user_metadata, &client)
        .await?;
    let body = RegisterResponse {
        user: User::from(&user),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// How a login's tokens travel.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum TransportName {
    /// In the JSON body (the default).
    Body,
    /// As `HttpOnly` cookies, with a CSRF token in the body.
    Cookie,
}

// The body `login` reads (see `RegisterRequest` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LoginRequest {
    #[schema(min_length = 1, max_length = 254)]
    email: String,
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
    #[schema(nullable = false)]
    transport: Option<TransportName>,
    /// The refresh token of a session this device already holds for the account, if any (in
    /// cookie transport the refresh cookie does this). It lets the owner sign in through a
    /// lock that others' guesses caused, with a small budget of failures of its own.
    #[schema(nullable = false)]
    refresh_token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    summary = "Sign in: a new session (one per device)",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session. In cookie transport the tokens are cookies and the body has `csrf_token` instead. For an account with a second factor: `mfa_required` and a challenge instead (no tokens, no session; finish with `POST /v1/auth/mfa/verify`).", body = LoginAnswer,
            headers(("set-cookie" = String, description = "Cookie transport only: `tessera_at`, `tessera_rt` and `tessera_csrf`; or, with `mfa_required`, `tessera_mfa`."))),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_credentials`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: per client IP, or the account is locked after repeated failures"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security((), ("refresh_cookie" = []))
)]
pub async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.login_limit, "login", &client)?;
    let mut f = Fields::new(&body);
    let email = f.required_str("email");
    let password = f.required_str("password");
    let transport = match f.optional_str("transport") {
        None | Some("body") => Transport::Body,
        Some("cookie") => Transport::Cookie,
        Some(_) => {
            f.invalid("transport", "must be \"body\" or \"cookie\"");
            Transport::Body
        }
    };
    let held_in_body = f.optional_str("refresh_token");
    f.finish()?;
    // A refresh token the device already holds (it matters only to the per-account lock).
    let cookies = RequestCookies::from_headers(&headers);
    let held = held_in_body.or(cookies.refresh.as_deref());
    let result = state
        .service
        .login(email, password, transport, held, &client)
        .await;
    state
        .metrics
        .login(if result.is_ok() { "success" } else { "failure" });
    Ok(login_response(&result?, state.cookie_secure))
}

// The body `refresh` reads (see `RegisterRequest` for why it is not deserialized).
/// Empty in cookie transport.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct RefreshRequest {
    /// Required unless the `tessera_rt` cookie is sent.
    #[schema(nullable = false, pattern = "^tsr_")]
    refresh_token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    summary = "Rotate a refresh token: new tokens for the same session",
    request_body = Option<RefreshRequest>,
    responses(
        (status = 200, description = "The same session with a new refresh token (rotation).", body = TokenResponse,
            headers(("set-cookie" = String, description = "Cookie transport only: the rotated `tessera_at`, `tessera_rt` and `tessera_csrf`."))),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_refresh_token`, `refresh_token_expired`, `refresh_token_reused`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP)"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security((), ("refresh_cookie" = [], "csrf_header" = []))
)]
/// Rotates the refresh token from the body, or else from the refresh cookie (which then
/// needs the CSRF header).
pub async fn refresh(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.refresh_limit, "refresh", &client)?;
    let cookies = RequestCookies::from_headers(&headers);
    let mut f = Fields::new(&body);
    let in_body = f.optional_str("refresh_token");
    let (token, csrf) = match (in_body, cookies.refresh.as_deref()) {
        (Some(token), _) => (token, None),
        (None, Some(token)) => (token, Some(cookies.require_csrf(&headers)?)),
        (None, None) => {
            f.invalid("refresh_token", "is required");
            ("", None)
        }
    };
    f.finish()?;
    let result = state.service.refresh(token, csrf, &client).await;
    state.metrics.refresh(match &result {
        Ok(_) => "success",
        Err(AuthError::RefreshTokenReused) => "reused",
        Err(_) => "failure",
    });
    if matches!(result, Err(AuthError::RefreshTokenReused)) {
        state.metrics.reuse_detected();
    }
    let grant = result?;
    Ok(token_response(&grant, state.cookie_secure))
}

// The body `logout` reads (see `RegisterRequest` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LogoutRequest {
    /// Required when a body is sent without a bearer token or cookies.
    #[schema(nullable = false)]
    refresh_token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    summary = "End one session (idempotent)",
    request_body = Option<LogoutRequest>,
    responses(
        (status = 204, description = "The session is revoked (also for an unknown or already-revoked token).",
            headers(("set-cookie" = String, description = "When cookies were sent: the three cookies cleared (`Max-Age=0`)."))),
        (status = 400, description = "`malformed_request`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security((), ("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("refresh_cookie" = [], "csrf_header" = []))
)]
/// Ends the session named by a refresh token (body or cookie) or an access token (bearer or
/// cookie). Always 204 for a well-formed request: logging out twice is not an error.
pub async fn logout(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let cookies = RequestCookies::from_headers(&headers);
    let mut f = Fields::new(&body);
    let in_body = f.optional_str("refresh_token");
    let bearer = bearer(&headers).token();
    if in_body.is_none() && bearer.is_none() && !cookies.any() && body.0.is_some() {
        f.invalid("refresh_token", "is required without a bearer token");
    }
    f.finish()?;
    let service = &state.service;
    let mut outcome = LogoutOutcome::Done;
    if let Some(token) = in_body {
        outcome = service.logout_with_refresh_token(token, None, &client).await?;
    } else if let Some(jwt) = bearer {
        service.logout_with_access_token(jwt, None, &client).await?;
    } else if cookies.refresh.is_some() || cookies.access.is_some() {
        let csrf = Some(cookies.require_csrf(&headers)?);
        if let Some(token) = cookies.refresh.as_deref() {
            outcome = service.logout_with_refresh_token(token, csrf, &client).await?;
        } else if let Some(jwt) = cookies.access.as_deref() {
            service.logout_with_access_token(jwt, csrf, &client).await?;
        }
    }
    // A stolen copy presented at logout is a reuse detection like any other.
    if outcome == LogoutOutcome::ReuseDetected {
        state.metrics.reuse_detected();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if cookies.any() {
        clear_cookies(response.headers_mut(), state.cookie_secure);
    }
    Ok(response)
}

/// Which sessions `logout-all` ends.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum ScopeName {
    /// Every session of the caller (the default).
    All,
    /// Every one but the current.
    Others,
}

// The body `logout-all` reads (see `RegisterRequest` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LogoutAllRequest {
    #[schema(nullable = false)]
    scope: Option<ScopeName>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    tag = "auth",
    summary = "End every session of the caller, or every other one",
    request_body = Option<LogoutAllRequest>,
    responses(
        (status = 204, description = "The sessions are revoked.",
            headers(("set-cookie" = String, description = "Scope `all` with cookies: the three cookies cleared (`Max-Age=0`)."))),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn logout_all(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    let scope = match f.optional_str("scope") {
        None | Some("all") => LogoutScope::All,
        Some("others") => LogoutScope::Others,
        Some(_) => {
            f.invalid("scope", "must be \"all\" or \"others\"");
            LogoutScope::All
        }
    };
    f.finish()?;
    state.service.logout_all(&ctx, scope, &client).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    // The caller's own session ended too: a browser should drop its cookies.
    if scope == LogoutScope::All && RequestCookies::from_headers(&headers).any() {
        clear_cookies(response.headers_mut(), state.cookie_secure);
    }
    Ok(response)
}

/// The answer of `register` when sign-in needs a verified address: the same whether or not
/// the address had an account.
#[derive(Serialize, ToSchema)]
pub(super) struct RegisterPending<'a> {
    /// Always `verification_sent`.
    #[schema(value_type = String, pattern = "^verification_sent$")]
    status: &'static str,
    #[schema(value_type = String, format = Email)]
    email: &'a str,
}

/// `register` with `TESSERA_REQUIRE_VERIFIED_EMAIL`: `202` and the same body either way.
pub(super) fn register_pending(email: &str) -> Response {
    let body = RegisterPending {
        status: "verification_sent",
        email,
    };
    with_status(StatusCode::ACCEPTED, body)
}
