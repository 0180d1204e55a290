//! `/v1/auth/*`: thin handlers that parse input, call the service and shape the response.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{bearer_token, Authenticated, Client, Fields, JsonBody};
use super::AppState;
use crate::domain::{SessionId, Timestamp};
use crate::service::{AuthContext, LogoutScope, TokenGrant, UserView};
use crate::store::SessionRecord;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: &'a str,
    refresh_token_expires_in: i64,
    session_id: SessionId,
    user: &'a UserView,
}

fn token_response(grant: &TokenGrant) -> Response {
    let body = TokenResponse {
        access_token: &grant.access_token,
        token_type: "Bearer",
        expires_in: grant.access_expires_in,
        refresh_token: grant.refresh_token.expose(),
        refresh_token_expires_in: grant.refresh_expires_in,
        session_id: grant.session_id,
        user: &grant.user,
    };
    // Tokens must never sit in a cache (RFC 6749 §5.1).
    (
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(body),
    )
        .into_response()
}

pub async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    let email = f.required_str("email");
    let password = f.required_str("password");
    f.finish()?;
    let user = state.service.register(email, password, &client).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

pub async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    let email = f.required_str("email");
    let password = f.required_str("password");
    match f.optional_str("transport") {
        None | Some("body") => {}
        Some(_) => f.invalid("transport", "must be \"body\""),
    }
    f.finish()?;
    let grant = state.service.login(email, password, &client).await?;
    Ok(token_response(&grant))
}

pub async fn refresh(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    let token = f.required_str("refresh_token");
    f.finish()?;
    let grant = state.service.refresh(token, &client).await?;
    Ok(token_response(&grant))
}

/// Ends the session named by a refresh token in the body, or else by the bearer token.
/// Always 204 for a well-formed request: logging out twice is not an error.
pub async fn logout(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<StatusCode, ApiError> {
    let mut f = Fields::new(&body);
    let refresh_token = f.optional_str("refresh_token");
    let bearer = bearer_token(&headers);
    if refresh_token.is_none() && bearer.is_none() && body.0.is_some() {
        f.invalid("refresh_token", "is required without a bearer token");
    }
    f.finish()?;
    if let Some(token) = refresh_token {
        state.service.logout_with_refresh_token(token, &client).await?;
    } else if let Some(jwt) = bearer {
        state.service.logout_with_access_token(jwt, &client).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logout_all(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<StatusCode, ApiError> {
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
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct SessionView<'a> {
    id: SessionId,
    created_at: Timestamp,
    last_used_at: Timestamp,
    expires_at: Timestamp,
    user_agent: Option<&'a str>,
    ip: Option<&'a str>,
    current: bool,
}

fn session_view<'a>(s: &'a SessionRecord, ctx: &AuthContext) -> SessionView<'a> {
    SessionView {
        id: s.id,
        created_at: s.created_at,
        last_used_at: s.last_used_at,
        expires_at: s.expires_at(),
        user_agent: s.user_agent.as_deref(),
        ip: s.ip.as_deref(),
        current: s.id == ctx.session.id,
    }
}

pub async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let sessions = state.service.list_sessions(&ctx).await?;
    let views: Vec<_> = sessions.iter().map(|s| session_view(s, &ctx)).collect();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "sessions": views })),
    )
        .into_response())
}

pub async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.revoke_session(&ctx, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(Authenticated(ctx): Authenticated) -> Response {
    let body = json!({ "user": UserView::from(&ctx.user), "session_id": ctx.session.id });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}
