//! The caller's sessions (devices): listing them and ending one.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::no_store;
use super::error::ApiError;
use super::extract::{Authenticated, Client};
use super::AppState;
use crate::domain::{SessionId, Timestamp};
use crate::service::{AuthContext, AuthError};

/// One live session (device).
#[derive(Serialize, ToSchema)]
pub(super) struct SessionView<'a> {
    #[schema(value_type = String, format = Uuid)]
    id: SessionId,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    last_used_at: Timestamp,
    /// When it ends if nothing more happens.
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
    #[schema(value_type = Option<String>)]
    user_agent: Option<&'a str>,
    #[schema(value_type = Option<String>)]
    ip: Option<&'a str>,
    /// The session of the token this request was made with.
    current: bool,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SessionList<'a> {
    /// Most recently used first.
    sessions: Vec<SessionView<'a>>,
}

fn session_view<'a>(s: &'a crate::service::SessionView, ctx: &AuthContext) -> SessionView<'a> {
    SessionView {
        id: s.id,
        created_at: s.created_at,
        last_used_at: s.last_used_at,
        expires_at: s.expires_at,
        user_agent: s.user_agent.as_deref(),
        ip: s.ip.as_deref(),
        current: s.id == ctx.session_id(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/auth/sessions",
    tag = "auth",
    summary = "The caller's live sessions, most recently used first",
    responses(
        (status = 200, description = "The caller's live sessions.", body = SessionList),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []))
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let sessions = state.service.list_sessions(&ctx).await?;
    let body = SessionList {
        sessions: sessions.iter().map(|s| session_view(s, &ctx)).collect(),
    };
    Ok(no_store(body))
}

#[utoipa::path(
    delete,
    path = "/v1/auth/sessions/{id}",
    tag = "auth",
    summary = "Revoke one of the caller's sessions",
    params(("id" = String, Path, description = "A session id (anything else is just an unknown session).")),
    responses(
        (status = 204, description = "The session is revoked."),
        (status = 400, description = "`malformed_request` (an unparsable `X-Forwarded-For` behind a trusted proxy)"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 404, description = "`session_not_found`: unknown, or not the caller's"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    // An id that does not even decode is just another id that is not the caller's.
    let Ok(Path(id)) = id else {
        return Err(AuthError::SessionNotFound.into());
    };
    state.service.revoke_session(&ctx, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
