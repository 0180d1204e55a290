//! `/v1/auth/email/*` and `/v1/auth/password/{forgot,reset}`: the flows by email (verifying
//! the address, resetting a forgotten password, changing the address, sign-in links). Thin
//! handlers: the rules are `service::email`'s.
//!
//! Rate limits: every one of these is counted per client network (at the login rate), and
//! the ones that mail an address (`password/forgot`, `email-link`, `email/verify/resend`) also
//! per address (or account), [`PER_ADDRESS_PER_MINUTE`] a minute, known or not.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::{login_response, with_status, LoginAnswer, User};
use super::auth::TransportName;
use super::cookies::{set_link_cookie, RequestCookies};
use super::error::ApiError;
use super::extract::{rate_limit, Authenticated, Client, Fields, JsonBody};
use super::rate_limit::RateLimiter;
use super::AppState;
use crate::service::Transport;

/// Mails to one address (or account) a minute, at most.
pub const PER_ADDRESS_PER_MINUTE: u32 = 3;

/// The per-address limit: keyed by the address as typed, trimmed and lower-cased (which is
/// how accounts are stored), so an unknown address is limited like a known one.
fn limit_address(
    state: &AppState,
    limiter: &RateLimiter,
    endpoint: &'static str,
    key: &str,
) -> Result<(), ApiError> {
    limiter.check(&key.trim().to_lowercase()).map_err(|retry_after| {
        state.metrics.rate_limited(endpoint);
        ApiError::RateLimited(retry_after)
    })
}

/// What an answer that must say nothing about the account says.
#[derive(Serialize, ToSchema)]
pub(super) struct Accepted {
    /// Always `accepted`.
    #[schema(value_type = String, pattern = "^accepted$")]
    status: &'static str,
}

fn accepted() -> Response {
    with_status(StatusCode::ACCEPTED, Accepted { status: "accepted" })
}

// The body of the endpoints that take a mailed token.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TokenRequest {
    /// The token from the mailed link (the part after `#token=`, `#change=` or `#link=`).
    #[schema(min_length = 1, max_length = 128)]
    token: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct UserResponse<'a> {
    user: User<'a>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/email/verify",
    tag = "email",
    summary = "Verify the account's address with the token of a verification mail",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "Verified; new access tokens carry `email_verified: true`.", body = UserResponse),
        (status = 400, description = "`malformed_request`, `invalid_email_token` (unknown, used or superseded), `email_token_expired`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn verify_email(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "email_verify", &client)?;
    let mut f = Fields::new(&body);
    let token = f.required_str("token");
    f.finish()?;
    let user = state.service.verify_email(token, &client).await?;
    Ok(Json(UserResponse {
        user: User::from(&user),
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/auth/email/verify/resend",
    tag = "email",
    summary = "Mail the signed-in account a new verification link",
    responses(
        (status = 202, description = "Queued (nothing is sent for an address already verified); older links stop working.", body = Accepted),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 429, description = "`rate_limited`: per client IP, and 3 a minute per account"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn resend_verification(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "email_verify_resend", &client)?;
    let key = format!("user {}", ctx.user_id());
    limit_address(&state, &state.email_address_limit, "email_verify_resend", &key)?;
    state.service.resend_verification(&ctx).await?;
    Ok(accepted())
}

// The body of `password/forgot`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct EmailRequest {
    #[schema(format = Email, max_length = 254)]
    email: String,
}

// The body of `email-link`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LinkRequest {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// `cookie` from a browser: the answer sets `tessera_link`, and the link signs in only
    /// in this browser.
    #[schema(nullable = false)]
    transport: Option<TransportName>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/password/forgot",
    tag = "email",
    summary = "Mail a password reset link, if the address has an account",
    request_body = EmailRequest,
    responses(
        (status = 202, description = "The same answer, after the same work, whether or not the address has an account; a mail goes only to an account that exists.", body = Accepted),
        (status = 400, description = "`malformed_request`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: per client IP, and 3 a minute per address"),
    )
)]
pub async fn forgot_password(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "password_forgot", &client)?;
    let mut f = Fields::new(&body);
    let email = f.required_str("email");
    f.finish()?;
    limit_address(&state, &state.email_address_limit, "password_forgot", email)?;
    state.service.forgot_password(email)?;
    Ok(accepted())
}

// The body `password/reset` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ResetPasswordRequest {
    /// The token from the reset mail's link (after `#token=`).
    #[schema(min_length = 1, max_length = 128)]
    token: String,
    /// 8 to 1024 Unicode characters.
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

#[utoipa::path(
    post,
    path = "/v1/auth/password/reset",
    tag = "email",
    summary = "Set a new password with a reset link's token; every session ends",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "The password is set, every session of the account is revoked, its lock is lifted, and a notice is mailed. Sign in with the new password."),
        (status = 400, description = "`malformed_request`, `invalid_email_token` (unknown, used, superseded, or the password changed since), `email_token_expired`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn reset_password(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "password_reset", &client)?;
    let mut f = Fields::new(&body);
    let token = f.required_str("token");
    let new_password = f.required_str("new_password");
    f.finish()?;
    state.service.reset_password(token, new_password, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// The body `email/change` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ChangeEmailRequest {
    #[schema(format = Email, max_length = 254)]
    new_email: String,
    #[schema(min_length = 1, max_length = 1024)]
    current_password: String,
}

#[utoipa::path(
    post,
    path = "/v1/auth/email/change",
    tag = "email",
    summary = "Ask to change the account's address: a link to the new one confirms it",
    request_body = ChangeEmailRequest,
    responses(
        (status = 202, description = "A confirmation link goes to the new address (none if it has an account: the same answer) and a notice to the current one. Nothing changes until the link is used.", body = Accepted),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_credentials` (wrong current password), `invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport), `reauthentication_required` (the sign-in is older than `reauthentication_max_age`: `POST /v1/auth/reauthenticate` first)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: per client IP, or the account is locked after repeated failures"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn change_email(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "email_change", &client)?;
    let mut f = Fields::new(&body);
    let new_email = f.required_str("new_email");
    let current_password = f.required_str("current_password");
    f.finish()?;
    state
        .service
        .request_email_change(&ctx, new_email, current_password, &client)
        .await?;
    Ok(accepted())
}

#[utoipa::path(
    post,
    path = "/v1/auth/email/change/confirm",
    tag = "email",
    summary = "Confirm an address change with the token mailed to the new address",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The account now has the new address (verified).", body = UserResponse),
        (status = 400, description = "`malformed_request`, `invalid_email_token`, `email_token_expired`"),
        (status = 408, description = "`request_timeout`"),
        (status = 409, description = "`email_taken`: the address got an account meanwhile"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn confirm_email_change(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "email_change_confirm", &client)?;
    let mut f = Fields::new(&body);
    let token = f.required_str("token");
    f.finish()?;
    let user = state.service.confirm_email_change(token, &client).await?;
    Ok(Json(UserResponse {
        user: User::from(&user),
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/auth/email-link",
    tag = "email",
    summary = "Mail a sign-in link, if the address has an account (TESSERA_EMAIL_LINK_SIGNIN)",
    request_body = LinkRequest,
    responses(
        (status = 202, description = "The same answer, after the same work, whether or not the address has an account.", body = Accepted,
            headers(("set-cookie" = String, description = "Cookie transport only: `tessera_link`, which the link then needs."))),
        (status = 400, description = "`malformed_request`"),
        (status = 404, description = "`not_found`: sign-in links are off"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: per client IP, and 3 a minute per address"),
    )
)]
pub async fn email_link(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "email_link", &client)?;
    let mut f = Fields::new(&body);
    let email = f.required_str("email");
    let in_browser = transport(&mut f) == Transport::Cookie;
    f.finish()?;
    if !state.service.offers_sign_in_links() {
        return Err(crate::service::AuthError::LinkSigninDisabled.into());
    }
    limit_address(&state, &state.email_address_limit, "email_link", email)?;
    let browser = state.service.send_sign_in_link(email, in_browser)?;
    let mut response = accepted();
    if let Some(browser) = browser {
        set_link_cookie(
            response.headers_mut(),
            browser,
            state.service.sign_in_link_ttl(),
            state.cookie_secure,
        );
    }
    Ok(response)
}

/// The `transport` field: `body` (the default) or `cookie`.
pub(super) fn transport(f: &mut Fields<'_>) -> Transport {
    match f.optional_str("transport") {
        None | Some("body") => Transport::Body,
        Some("cookie") => Transport::Cookie,
        Some(_) => {
            f.invalid("transport", "must be \"body\" or \"cookie\"");
            Transport::Body
        }
    }
}

// The body `email-link/verify` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LinkSignInRequest {
    /// The token from the sign-in mail's link (after `#link=`).
    #[schema(min_length = 1, max_length = 128)]
    token: String,
    #[schema(nullable = false)]
    transport: Option<TransportName>,
}

#[utoipa::path(
    post,
    path = "/v1/auth/email-link/verify",
    tag = "email",
    summary = "Sign in with a sign-in link's token: a new session, as a login gives",
    request_body = LinkSignInRequest,
    responses(
        (status = 200, description = "A new session, as `POST /v1/auth/login` answers (cookie transport likewise); for an account with a second factor, `mfa_required` and a challenge, as `login` answers.", body = LoginAnswer,
            headers(("set-cookie" = String, description = "Cookie transport only: `tessera_at`, `tessera_rt` and `tessera_csrf`; or, with `mfa_required`, `tessera_mfa`."))),
        (status = 400, description = "`malformed_request`, `invalid_email_token`, `email_token_expired`, `email_link_other_browser` (asked for in another browser)"),
        (status = 404, description = "`not_found`: sign-in links are off"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn email_link_verify(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.email_limit, "email_link_verify", &client)?;
    let mut f = Fields::new(&body);
    let token = f.required_str("token");
    let transport = transport(&mut f);
    f.finish()?;
    let browser = RequestCookies::from_headers(&headers).link;
    let outcome = state
        .service
        .sign_in_with_link(token, transport, browser.as_deref(), &client)
        .await?;
    Ok(login_response(&outcome, state.cookie_secure))
}
