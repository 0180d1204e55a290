//! The signed-in account: who it is (`GET /v1/auth/me`) and changing its password.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::{no_store, no_store_rendered, token_response, TokenResponse, User};
use super::error::ApiError;
use super::extract::{Authenticated, Client, Fields, JsonBody};
use super::AppState;
use crate::domain::{FieldError, SessionId};
use crate::service::AuthError;

// The body `password` reads (see `RegisterRequest` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ChangePasswordRequest {
    #[schema(min_length = 1, max_length = 1024)]
    current_password: String,
    /// 8 to 1024 Unicode characters.
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    summary = "Change the password; every other session ends",
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed; every other session is revoked and this one gets fresh tokens.", body = TokenResponse,
            headers(("set-cookie" = String, description = "Cookie transport only: fresh `tessera_at`, `tessera_rt` and `tessera_csrf`."))),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_credentials` (wrong current password), `invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport), `reauthentication_required` (the sign-in is older than `reauthentication_max_age`: `POST /v1/auth/reauthenticate` first)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: the account is locked after repeated failures"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
/// Changes the caller's password (it must send the current one); every other session of the
/// account is revoked, and this one continues with fresh tokens (cookies, for a browser).
pub async fn change_password(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    let current = f.required_str("current_password");
    let new = f.required_str("new_password");
    f.finish()?;
    let grant = state.service.change_password(&ctx, current, new, &client).await?;
    Ok(token_response(&grant, state.cookie_secure))
}

#[derive(Serialize, ToSchema)]
pub(super) struct MeResponse<'a> {
    user: User<'a>,
    #[schema(value_type = String, format = Uuid)]
    session_id: SessionId,
}

#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    summary = "Who the caller is",
    params(("include" = Option<String>, Query, description = "`metadata`: also the account's `user_metadata` and `app_metadata` (read from the database; without it the answer comes from memory).")),
    responses(
        (status = 200, description = "Who the caller is, and which session.", body = MeResponse),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let with_metadata = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "include=metadata"));
    if with_metadata {
        let account = state.service.my_account(&ctx).await?;
        return Ok(no_store(MeResponse {
            user: User::from(&account),
            session_id: ctx.session_id(),
        }));
    }
    // Without metadata the answer is the session's snapshot alone: rendered once per snapshot.
    let json = match ctx.session.rendering() {
        Some(json) => json,
        None => {
            let body = MeResponse {
                user: User::from(&ctx.session.user),
                session_id: ctx.session_id(),
            };
            // It cannot fail (strings, a bool, ids); if it did, `no_store` answers the error.
            let Ok(json) = serde_json::to_vec(&body) else {
                return Ok(no_store(body));
            };
            // Kept for the session's life, so copied into a buffer of its exact size: the
            // one serde_json grew is a quarter larger (shrinking it in place frees nothing).
            let json = Bytes::copy_from_slice(&json);
            ctx.session.keep_rendering(json.clone());
            json
        }
    };
    Ok(no_store_rendered(json))
}

// The body `PATCH /v1/auth/me` reads (see `RegisterRequest` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UpdateMeRequest {
    /// Replaces the account's `user_metadata`: a JSON object of at most 4096 bytes.
    #[schema(value_type = Object)]
    user_metadata: serde_json::Value,
}

#[utoipa::path(
    patch,
    path = "/v1/auth/me",
    tag = "auth",
    summary = "Change the caller's user_metadata",
    request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "The account as it is now, metadata included.", body = MeResponse),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`: not an object, over 4096 bytes, too deep, or an unknown field"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn update_me(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    f.only(&["user_metadata"]);
    let metadata = f.optional_object("user_metadata");
    if metadata.is_none() && !body.0.as_ref().is_some_and(|m| m.contains_key("user_metadata")) {
        f.invalid("user_metadata", "is required");
    }
    f.finish()?;
    let Some(metadata) = metadata else {
        return Err(ApiError::Auth(AuthError::Validation(vec![FieldError::new(
            "user_metadata",
            "must be a JSON object",
        )])));
    };
    let user = state.service.set_my_metadata(&ctx, metadata).await?;
    let body = MeResponse {
        user: User::from(&user),
        session_id: ctx.session_id(),
    };
    Ok(no_store(body))
}
