//! `/v1/admin/*`: the admin API for back-office tools and the `/admin` page. Every handler
//! takes an [`AdminCaller`] first (its own rate limit, then a back-office credential with the
//! scope the method needs, or an access token of an account holding the admin role), so a
//! caller who is not an administrator is answered `403 forbidden` before anything is looked
//! up. The operations are `service::admin::AdminService`'s, the same the CLI runs.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::answer::{no_store, with_status};
use super::error::ApiError;
use super::extract::{AdminCaller, Fields, JsonBody};
use super::AppState;
use crate::domain::{Email, FieldError, Password, SessionId, Timestamp, UserId};
use crate::service::admin::{AccountUpdate, AuditPageQuery, NewAccount, SessionRevocation};
use crate::service::AuthError;
use crate::store::AccountFilter;

/// Entries per page when the caller does not say, and the most it may ask for.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

// The JSON the service's views serialize to, described for the OpenAPI document.
/// An account as an administrator sees it.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `service::admin::AccountView`; never built.
pub(super) struct AdminUser {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Email)]
    email: String,
    roles: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// Set while the account is disabled.
    #[schema(format = DateTime)]
    disabled_at: Option<String>,
    /// Has the account proved its address?
    email_verified: bool,
    /// Profile data the user edits.
    #[schema(value_type = Object)]
    user_metadata: Value,
    /// Data only administrators set.
    #[schema(value_type = Object)]
    app_metadata: Value,
    /// Live sessions (single accounts only, not in listings).
    #[schema(nullable = false)]
    live_sessions: Option<u64>,
}

/// A session as an administrator sees it.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `service::SessionView`; never built.
pub(super) struct AdminSession {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
}

/// A page of accounts, in creation order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UserPage {
    users: Vec<AdminUser>,
    /// The `cursor` of the next page; absent on the last one.
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// One account, its live sessions, second factors and last login.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `service::admin::AccountDetail`.
pub(super) struct UserDetail {
    user: AdminUser,
    /// Most recently used first.
    sessions: Vec<AdminSession>,
    /// Second factors, one object each: `{"type": "totp", "enabled", "created_at"}`,
    /// `{"type": "recovery_codes", "left"}`, `{"type": "passkey", "id", "name", "created_at"}`.
    #[schema(value_type = Vec<Object>)]
    factors: Vec<Value>,
    #[schema(format = DateTime)]
    last_login_at: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct AdminSessionList {
    sessions: Vec<AdminSession>,
}

/// How many sessions an action revoked.
#[derive(Serialize, ToSchema)]
pub(super) struct Revoked {
    sessions_revoked: u64,
}

/// An audit event.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditEventView {
    #[schema(value_type = String, format = Uuid)]
    id: uuid::Uuid,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    event: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    user_id: Option<UserId>,
    /// The account's email, while the account exists.
    email: Option<String>,
    #[schema(value_type = Option<String>, format = Uuid)]
    session_id: Option<SessionId>,
    ip: Option<String>,
    user_agent: Option<String>,
    /// What the event records besides (an object; a detail that is not JSON is `{"text"}`).
    #[schema(value_type = Option<Object>)]
    detail: Option<Value>,
}

/// A page of the audit trail, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditPage {
    events: Vec<AuditEventView>,
    /// The `cursor` of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// A signing key (never its private part).
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `service::KeyView`.
pub(super) struct AdminKey {
    kid: String,
    alg: String,
    /// `next`, `signing`, `retired` or `revoked`...
    stage: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    activates_at: String,
    #[schema(format = DateTime)]
    retired_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    encrypted: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct AdminKeyList {
    keys: Vec<AdminKey>,
}

/// An alert in the outbox.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes `service::admin::AlertView`.
pub(super) struct AdminAlert {
    #[schema(format = Uuid)]
    id: String,
    event: String,
    #[schema(format = DateTime)]
    created_at: String,
    attempts: u32,
    #[schema(format = DateTime)]
    next_attempt_at: String,
    #[schema(format = DateTime)]
    delivered_at: Option<String>,
    /// The body POSTed to the webhook.
    #[schema(value_type = Object)]
    payload: Value,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct AdminAlertList {
    alerts: Vec<AdminAlert>,
}

// The bodies the handlers read field by field (see `RegisterRequest`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CreateUserRequest {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 1024 Unicode characters. Without one, the address is mailed an invitation: a link
    /// to choose a password, good for 7 days.
    #[schema(min_length = 8, max_length = 1024, nullable = false)]
    password: Option<String>,
    #[schema(nullable = false)]
    roles: Option<Vec<String>>,
    #[schema(value_type = Option<Object>, nullable = false)]
    app_metadata: Option<Value>,
    #[schema(value_type = Option<Object>, nullable = false)]
    user_metadata: Option<Value>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UpdateUserRequest {
    /// Replaces the roles.
    #[schema(nullable = false)]
    roles: Option<Vec<String>>,
    /// Replaces `app_metadata` (at most 4096 bytes as JSON).
    #[schema(value_type = Option<Object>, nullable = false)]
    app_metadata: Option<Value>,
    /// Marks the address proved (`true`) or not (`false`).
    #[schema(nullable = false)]
    email_verified: Option<bool>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct SetPasswordRequest {
    /// 8 to 1024 Unicode characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

/// A path's user id; anything else names no user.
fn user_id(id: Result<Path<String>, PathRejection>) -> Result<UserId, ApiError> {
    id.ok()
        .and_then(|Path(id)| UserId::parse(id.trim()))
        .ok_or(ApiError::Auth(AuthError::UserNotFound))
}

fn found<T>(value: Option<T>) -> Result<T, ApiError> {
    value.ok_or(ApiError::Auth(AuthError::UserNotFound))
}

type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Reads a query string's parameters, every problem reported at once.
struct Params {
    map: HashMap<String, String>,
    errors: Vec<FieldError>,
}

impl Params {
    fn new(query: RawQuery) -> Result<Params, ApiError> {
        let Query(map) = query.map_err(|_| ApiError::Malformed("The query string is malformed."))?;
        Ok(Params {
            map,
            errors: Vec::new(),
        })
    }

    fn text(&self, name: &str) -> Option<String> {
        self.map
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn limit(&mut self) -> u32 {
        match self.map.get("limit").map(|v| v.parse::<u32>()) {
            None => DEFAULT_PAGE,
            Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
            Some(_) => {
                self.errors
                    .push(FieldError::new("limit", format!("must be from 1 to {MAX_PAGE}")));
                DEFAULT_PAGE
            }
        }
    }

    fn time(&mut self, name: &str) -> Option<Timestamp> {
        let raw = self.text(name)?;
        match time::OffsetDateTime::parse(&raw, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        {
            Some(millis) => Some(Timestamp(millis)),
            None => {
                self.errors
                    .push(FieldError::new(name, "must be an RFC 3339 time"));
                None
            }
        }
    }

    fn flag(&mut self, name: &str) -> Option<bool> {
        match self.text(name).as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                self.errors.push(FieldError::new(name, "must be true or false"));
                None
            }
        }
    }

    fn user(&mut self, name: &str) -> Option<UserId> {
        let raw = self.text(name)?;
        let id = UserId::parse(&raw);
        if id.is_none() {
            self.errors.push(FieldError::new(name, "must be a user id"));
        }
        id
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors.into())
        }
    }
}

/// A list of strings, as a body field (`roles`); `None` when absent.
fn string_list(f: &mut Fields<'_>, body: &JsonBody, name: &str) -> Option<Vec<String>> {
    match body.0.as_ref().and_then(|m| m.get(name)) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(_) => {
            f.invalid(name, "must be a list of strings");
            None
        }
    }
}

/// A JSON object field (metadata); `None` when absent. Checked in full by the service.
fn object<'a>(f: &mut Fields<'_>, body: &'a JsonBody, name: &str) -> Option<&'a Value> {
    match body.0.as_ref().and_then(|m| m.get(name)) {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => {
            f.invalid(name, "must be a JSON object");
            None
        }
    }
}

/// A password field: `None` when it is missing, empty or refused, each reported by name (the
/// caller's `finish` answers 422 then).
fn password(f: &mut Fields<'_>, name: &str) -> Option<Password> {
    let raw = f.required_nonempty_str(name);
    if raw.is_empty() {
        return None;
    }
    match Password::parse(raw) {
        Ok(p) => Some(p),
        Err(e) => {
            f.invalid(name, &e.message);
            None
        }
    }
}

/// `?cursor=&limit=&email=&disabled=&role=&created_after=&created_before=`, all optional.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    summary = "List accounts (creation order, cursor-paginated, filtered)",
    params(
        ("cursor" = Option<String>, Query, format = Uuid, description = "The `next_cursor` of the previous page."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Accounts at most (default 50)."),
        ("email" = Option<String>, Query, description = "Only emails starting with this (case-insensitive)."),
        ("disabled" = Option<bool>, Query, description = "Only disabled (`true`) or enabled (`false`) accounts."),
        ("role" = Option<String>, Query, description = "Only accounts with this role."),
        ("created_after" = Option<String>, Query, format = DateTime, description = "Created at or after this time."),
        ("created_before" = Option<String>, Query, format = DateTime, description = "Created before this time."),
    ),
    responses(
        (status = 200, description = "A page of accounts.", body = UserPage),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`: not an administrator"),
        (status = 422, description = "`validation_failed`: a bad parameter"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []), ("admin_credential" = []))
)]
pub async fn list_users(
    State(state): State<AppState>,
    caller: AdminCaller,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::new(query)?;
    let after = p.user("cursor");
    let limit = p.limit();
    let filter = AccountFilter {
        after,
        email_prefix: p.text("email").map(|e| e.to_lowercase()),
        disabled: p.flag("disabled"),
        role: p.text("role"),
        created_from: p.time("created_after"),
        created_until: p.time("created_before"),
        limit,
    };
    p.finish()?;
    let users = caller.service(&state).find_users(&filter).await?;
    let next_cursor = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.id.to_string()))
        .flatten();
    #[derive(Serialize)]
    struct Page<T> {
        users: Vec<T>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    }
    Ok(no_store(Page { users, next_cursor }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    summary = "Create an account with a password",
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created.", body = AdminUser),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden` (not an administrator, or an `admin:read` credential), `csrf_failed`"),
        (status = 409, description = "`email_taken`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: AdminCaller,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    let email = f.required_str("email");
    if let (false, Err(e)) = (email.is_empty(), Email::parse(email)) {
        f.invalid("email", &e.message);
    }
    // No password: the account is invited (a mail with a link to choose one).
    let password = match body.0.as_ref().and_then(|m| m.get("password")) {
        None | Some(Value::Null) => Some(None),
        Some(_) => password(&mut f, "password").map(Some),
    };
    let roles = string_list(&mut f, &body, "roles").unwrap_or_default();
    let app_metadata = object(&mut f, &body, "app_metadata");
    let user_metadata = object(&mut f, &body, "user_metadata");
    f.finish()?;
    // A password given but refused was reported by `finish` above.
    let Some(password) = password else {
        return Err(AuthError::Internal("password checked above".into()).into());
    };
    let user = caller
        .service(&state)
        .create_user(NewAccount {
            email,
            password,
            roles: &roles,
            app_metadata,
            user_metadata,
        })
        .await?;
    Ok(with_status(StatusCode::CREATED, user))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    summary = "One account with its sessions, factors and last login",
    params(("id" = String, Path, description = "A user id.")),
    responses(
        (status = 200, description = "The account.", body = UserDetail),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []), ("admin_credential" = []))
)]
pub async fn show_user(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_id(id)?;
    let detail = found(caller.service(&state).user_detail(id).await?)?;
    Ok(no_store(detail))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    summary = "Change an account's roles, app_metadata or email_verified",
    params(("id" = String, Path, description = "A user id.")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The account as it is now.", body = AdminUser),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn update_user(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = user_id(id)?;
    let mut f = Fields::new(&body);
    let roles = string_list(&mut f, &body, "roles");
    let app_metadata = object(&mut f, &body, "app_metadata");
    let email_verified = match body.0.as_ref().and_then(|m| m.get("email_verified")) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            f.invalid("email_verified", "must be true or false");
            None
        }
    };
    f.finish()?;
    let update = AccountUpdate {
        roles: roles.as_deref(),
        app_metadata,
        email_verified,
    };
    let user = found(caller.service(&state).update_user(id, update).await?)?;
    Ok(no_store(user))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    summary = "Delete an account (its sessions go; its audit events stay, without its email)",
    params(("id" = String, Path, description = "A user id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(id)?;
    found(caller.service(&state).delete_user(id).await?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/disable",
    tag = "admin",
    summary = "Disable an account: its sessions are revoked and it cannot sign in",
    params(("id" = String, Path, description = "A user id.")),
    responses(
        (status = 200, description = "Disabled (or already).", body = Revoked),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn disable_user(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_id(id)?;
    let revoked = found(caller.service(&state).disable_user(id).await?)?;
    Ok(no_store(Revoked {
        sessions_revoked: revoked,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/enable",
    tag = "admin",
    summary = "Let a disabled account sign in again",
    params(("id" = String, Path, description = "A user id.")),
    responses(
        (status = 204, description = "Enabled (or was not disabled)."),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn enable_user(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = user_id(id)?;
    found(caller.service(&state).enable_user(id).await?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/password",
    tag = "admin",
    summary = "Set an account's password: every session of it is revoked",
    params(("id" = String, Path, description = "A user id.")),
    request_body = SetPasswordRequest,
    responses(
        (status = 200, description = "Set.", body = Revoked),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn set_password(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let id = user_id(id)?;
    let mut f = Fields::new(&body);
    let password = password(&mut f, "password");
    f.finish()?;
    let Some(password) = password else {
        return Err(AuthError::Internal("password checked above".into()).into());
    };
    let revoked = found(caller.service(&state).set_password(id, password).await?)?;
    Ok(no_store(Revoked {
        sessions_revoked: revoked,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}/sessions",
    tag = "admin",
    summary = "An account's live sessions, most recently used first",
    params(("id" = String, Path, description = "A user id.")),
    responses(
        (status = 200, description = "The live sessions.", body = AdminSessionList),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []), ("admin_credential" = []))
)]
pub async fn list_user_sessions(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_id(id)?;
    let sessions = found(caller.service(&state).list_sessions(id).await?)?;
    #[derive(Serialize)]
    struct List<T> {
        sessions: Vec<T>,
    }
    Ok(no_store(List { sessions }))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}/sessions",
    tag = "admin",
    summary = "Revoke every session of an account",
    params(("id" = String, Path, description = "A user id.")),
    responses(
        (status = 200, description = "Revoked.", body = Revoked),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`not_found`: no such user"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn revoke_user_sessions(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = user_id(id)?;
    let revoked = found(caller.service(&state).revoke_user_sessions(id).await?)?;
    Ok(no_store(Revoked {
        sessions_revoked: revoked,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/sessions/{id}",
    tag = "admin",
    summary = "Revoke one session, whoever's it is",
    params(("id" = String, Path, description = "A session id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`, `csrf_failed`"),
        (status = 404, description = "`session_not_found`: unknown or already revoked"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []), ("admin_credential" = []))
)]
pub async fn revoke_session(
    State(state): State<AppState>,
    caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(AuthError::SessionNotFound.into());
    };
    match caller.service(&state).revoke_session(&id).await? {
        SessionRevocation::Revoked => Ok(StatusCode::NO_CONTENT),
        SessionRevocation::AlreadyRevoked | SessionRevocation::NotFound => {
            Err(AuthError::SessionNotFound.into())
        }
    }
}

/// `?user_id=&kind=&since=&until=&cursor=&limit=`, all optional.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    summary = "The audit trail, newest first (cursor-paginated, filtered)",
    params(
        ("user_id" = Option<String>, Query, format = Uuid, description = "Only this user's events."),
        ("kind" = Option<String>, Query, description = "Only events of this kind (`login_succeeded`, `admin_user_disabled`...)."),
        ("since" = Option<String>, Query, format = DateTime, description = "Events at or after this time."),
        ("until" = Option<String>, Query, format = DateTime, description = "Events before this time."),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Events at most (default 50)."),
    ),
    responses(
        (status = 200, description = "A page of events.", body = AuditPage),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`"),
        (status = 422, description = "`validation_failed`: a bad parameter"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []), ("admin_credential" = []))
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: AdminCaller,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::new(query)?;
    let user = p.user("user_id");
    let limit = p.limit();
    let before = match p.text("cursor") {
        None => None,
        Some(cursor) => {
            let parsed = parse_audit_cursor(&cursor);
            if parsed.is_none() {
                p.errors
                    .push(FieldError::new("cursor", "is not a cursor this server gave"));
            }
            parsed
        }
    };
    let query = AuditPageQuery {
        user,
        kind: p.text("kind"),
        since: p.time("since"),
        until: p.time("until"),
        before,
        limit,
    };
    p.finish()?;
    let events = caller.service(&state).audit_page(&query).await?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| format!("{}_{}", e.at.millis(), e.id)))
        .flatten();
    let events = events
        .into_iter()
        .map(|e| AuditEventView {
            detail: e.detail.map(|d| match serde_json::from_str::<Value>(&d) {
                Ok(v @ Value::Object(_)) => v,
                _ => serde_json::json!({ "text": d }),
            }),
            id: e.id,
            at: e.at,
            event: e.event,
            user_id: e.user_id,
            email: e.email,
            session_id: e.session_id,
            ip: e.ip,
            user_agent: e.user_agent,
        })
        .collect();
    Ok(no_store(AuditPage { events, next_cursor }))
}

fn parse_audit_cursor(cursor: &str) -> Option<(Timestamp, uuid::Uuid)> {
    let (at, id) = cursor.split_once('_')?;
    Some((Timestamp(at.parse().ok()?), uuid::Uuid::parse_str(id).ok()?))
}

#[utoipa::path(
    get,
    path = "/v1/admin/keys",
    tag = "admin",
    summary = "The signing keys (read-only: rotation stays an operator's act)",
    responses(
        (status = 200, description = "Every signing key kept.", body = AdminKeyList),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []), ("admin_credential" = []))
)]
pub async fn keys(State(state): State<AppState>, _caller: AdminCaller) -> Result<Response, ApiError> {
    let keys = state.service.list_keys().await?;
    #[derive(Serialize)]
    struct List<T> {
        keys: Vec<T>,
    }
    Ok(no_store(List { keys }))
}

/// `?pending=true&limit=N`.
#[utoipa::path(
    get,
    path = "/v1/admin/alerts",
    tag = "admin",
    summary = "The alert outbox, newest first (read-only)",
    params(
        ("pending" = Option<bool>, Query, description = "Only alerts not delivered yet."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Alerts at most (default 50)."),
    ),
    responses(
        (status = 200, description = "The alerts.", body = AdminAlertList),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`forbidden`"),
        (status = 422, description = "`validation_failed`: a bad parameter"),
        (status = 429, description = "`rate_limited`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []), ("admin_credential" = []))
)]
pub async fn alerts(
    State(state): State<AppState>,
    caller: AdminCaller,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::new(query)?;
    let pending = p.flag("pending").unwrap_or(false);
    let limit = p.limit();
    p.finish()?;
    let alerts = caller.service(&state).alerts(pending, limit).await?;
    #[derive(Serialize)]
    struct List<T> {
        alerts: Vec<T>,
    }
    Ok(no_store(List { alerts }))
}
