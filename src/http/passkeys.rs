//! Passkeys: the signed-in account's (`/v1/account/passkeys`: register, list, rename,
//! remove) and signing in with one alone (`/v1/auth/passkey`). The ceremonies' options and
//! answers are WebAuthn's JSON (binary fields base64url), as the browser client converts them.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::{no_store, token_response, TokenResponse};
use super::auth::TransportName;
use super::cookies::RequestCookies;
use super::email::transport;
use super::error::ApiError;
use super::extract::{rate_limit, Authenticated, Client, Fields, JsonBody};
use super::AppState;
use crate::domain::{PasskeyId, Timestamp};
use crate::service::AuthError;

/// A passkey registered to the account.
#[derive(Serialize, ToSchema)]
pub(super) struct PasskeyBody {
    #[schema(value_type = String, format = Uuid)]
    id: PasskeyId,
    /// The holder's name for it ("Passkey 1" unless given).
    name: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    /// The last sign-in with it; null before the first.
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<Timestamp>,
}

impl From<&crate::service::RegisteredPasskey> for PasskeyBody {
    fn from(p: &crate::service::RegisteredPasskey) -> Self {
        PasskeyBody {
            id: p.id,
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct PasskeyList {
    /// Oldest first.
    passkeys: Vec<PasskeyBody>,
}

/// WebAuthn options (`publicKey`: `PublicKeyCredentialCreationOptions` or
/// `PublicKeyCredentialRequestOptions`), binary fields base64url.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes webauthn-rs's JSON; never built.
pub(super) struct CreationOptions {
    #[schema(rename = "publicKey", value_type = Object)]
    public_key: serde_json::Value,
}

/// A sign-in ceremony: its id (to send back with the answer) and the options for
/// `navigator.credentials.get`.
#[derive(Serialize, ToSchema)]
pub(super) struct SignInOptions {
    /// Opaque; names this ceremony in `POST /v1/auth/passkey`, once.
    ceremony: String,
    /// Seconds the ceremony waits for its answer.
    expires_in: u64,
    /// `PublicKeyCredentialRequestOptions` (binary fields base64url): the challenge, the
    /// relying party id, user verification `required`, no credentials listed (discoverable).
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    public_key: serde_json::Value,
}

// The body `register` reads (see `RegisterRequest` in `auth.rs` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct RegisterPasskeyRequest {
    /// 1 to 64 characters (default "Passkey N").
    #[schema(nullable = false, min_length = 1, max_length = 64)]
    name: Option<String>,
    /// The `PublicKeyCredential` from `navigator.credentials.create`, as JSON (binary fields
    /// base64url: `id`, `rawId`, `response.attestationObject`, `response.clientDataJSON`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

// The body `rename` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct RenamePasskeyRequest {
    #[schema(min_length = 1, max_length = 64)]
    name: String,
}

// The body `sign_in` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PasskeySignInRequest {
    /// The `ceremony` of `POST /v1/auth/passkey/options`.
    ceremony: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, as JSON (binary fields
    /// base64url: `id`, `rawId`, `response.authenticatorData`, `response.clientDataJSON`,
    /// `response.signature`, `response.userHandle`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
    #[schema(nullable = false)]
    transport: Option<TransportName>,
}

#[utoipa::path(
    post,
    path = "/v1/account/passkeys/register/options",
    tag = "passkeys",
    summary = "Start registering a passkey: options for navigator.credentials.create",
    responses(
        (status = 200, description = "`PublicKeyCredentialCreationOptions` under `publicKey` (resident key and user verification required, attestation `none`, the account's passkeys excluded). The ceremony is kept on the server for 5 minutes; a newer start replaces it.", body = CreationOptions),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn register_options(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let options = state.service.passkey_registration_options(&ctx).await?;
    Ok(no_store(options))
}

#[utoipa::path(
    post,
    path = "/v1/account/passkeys/register",
    tag = "passkeys",
    summary = "Finish registering a passkey",
    request_body = RegisterPasskeyRequest,
    responses(
        (status = 201, description = "The passkey is registered.", body = PasskeyBody),
        (status = 400, description = "`malformed_request`, `passkey_ceremony_invalid` (none started, or used), `passkey_ceremony_expired`, `passkey_invalid`, `passkey_wrong_origin`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 408, description = "`request_timeout`"),
        (status = 409, description = "`passkey_already_registered`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    f.only(&["name", "credential"]);
    let name = f.optional_str("name");
    let credential = f.optional_object("credential");
    if credential.is_none() {
        f.invalid("credential", "is required");
    }
    f.finish()?;
    let credential = credential.ok_or(ApiError::Malformed("credential is required"))?;
    let passkey = state
        .service
        .register_passkey(&ctx, name, credential, &client)
        .await?;
    Ok((StatusCode::CREATED, no_store(PasskeyBody::from(&passkey))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/account/passkeys",
    tag = "passkeys",
    summary = "The account's passkeys",
    responses(
        (status = 200, description = "The account's passkeys, oldest first.", body = PasskeyList),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let passkeys = state.service.list_passkeys(&ctx).await?;
    Ok(no_store(PasskeyList {
        passkeys: passkeys.iter().map(PasskeyBody::from).collect(),
    }))
}

#[utoipa::path(
    patch,
    path = "/v1/account/passkeys/{id}",
    tag = "passkeys",
    summary = "Rename one of the account's passkeys",
    params(("id" = String, Path, description = "A passkey id (another account's is not found).")),
    request_body = RenamePasskeyRequest,
    responses(
        (status = 200, description = "The passkey as it is now.", body = PasskeyBody),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 404, description = "`passkey_not_found`, `passkeys_disabled`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn rename(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    id: Result<Path<String>, PathRejection>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(AuthError::PasskeyNotFound.into());
    };
    let mut f = Fields::new(&body);
    f.only(&["name"]);
    let name = f.required_str("name");
    f.finish()?;
    let passkey = state.service.rename_passkey(&ctx, &id, name).await?;
    Ok(no_store(PasskeyBody::from(&passkey)))
}

#[utoipa::path(
    delete,
    path = "/v1/account/passkeys/{id}",
    tag = "passkeys",
    summary = "Remove one of the account's passkeys",
    params(("id" = String, Path, description = "A passkey id (another account's is not found).")),
    responses(
        (status = 204, description = "Removed: it signs in no more."),
        (status = 400, description = "`malformed_request` (an unparsable `X-Forwarded-For` behind a trusted proxy)"),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 404, description = "`passkey_not_found`, `passkeys_disabled`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(AuthError::PasskeyNotFound.into());
    };
    state.service.delete_passkey(&ctx, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/auth/passkey/options",
    tag = "passkeys",
    summary = "Start signing in with a passkey alone: options for navigator.credentials.get",
    responses(
        (status = 200, description = "A ceremony id and the request options (no credentials listed: the authenticator offers the passkeys it holds for this site).", body = SignInOptions),
        (status = 400, description = "`malformed_request` (an unparsable `X-Forwarded-For` behind a trusted proxy)"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 429, description = "`rate_limited` (per client IP, with logins)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn sign_in_options(
    State(state): State<AppState>,
    Client(client): Client,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.login_limit, "passkey_options", &client)?;
    let options = state.service.passkey_sign_in_options().await?;
    let public_key = options.options.get("publicKey").cloned().unwrap_or_default();
    Ok(no_store(SignInOptions {
        ceremony: options.ceremony,
        expires_in: options.expires_in,
        public_key,
    }))
}

// The body `factor_options` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PasskeyFactorOptionsRequest {
    /// The `challenge` of the `mfa_required` answer.
    #[schema(min_length = 1, max_length = 128)]
    challenge: String,
}

#[utoipa::path(
    post,
    path = "/v1/auth/mfa/passkey/options",
    tag = "passkeys",
    summary = "A passkey as the second step of a sign-in: options for navigator.credentials.get",
    request_body = PasskeyFactorOptionsRequest,
    responses(
        (status = 200, description = "`PublicKeyCredentialRequestOptions` under `publicKey`, listing the account's passkeys; answer with `POST /v1/auth/mfa/verify` `{challenge, method: \"passkey\", credential}`.", body = CreationOptions),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`mfa_challenge_invalid`, `mfa_challenge_expired`, `mfa_challenge_other_browser` (cookie transport: without the `tessera_mfa` cookie of the browser that signed in), `passkey_unknown` (the account has no passkey)"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP, with logins)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn factor_options(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.login_limit, "mfa_passkey_options", &client)?;
    let mut f = Fields::new(&body);
    f.only(&["challenge"]);
    let challenge = f.required_nonempty_str("challenge");
    f.finish()?;
    let browser = RequestCookies::from_headers(&headers).mfa;
    let options = state
        .service
        .passkey_factor_options(challenge, browser.as_deref())
        .await?;
    Ok(no_store(options))
}

#[utoipa::path(
    post,
    path = "/v1/auth/reauthenticate/passkey/options",
    tag = "passkeys",
    summary = "Reauthenticate with a passkey: options for navigator.credentials.get",
    responses(
        (status = 200, description = "`PublicKeyCredentialRequestOptions` under `publicKey`, listing the account's passkeys; answer with `POST /v1/auth/reauthenticate` `{method: \"passkey\", credential}`. The ceremony is kept on the server for 5 minutes, used once.", body = CreationOptions),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`, `passkey_unknown` (the account has no passkey)"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn reauthentication_options(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let options = state.service.reauthentication_passkey_options(&ctx).await?;
    Ok(no_store(options))
}

#[utoipa::path(
    post,
    path = "/v1/auth/passkey",
    tag = "passkeys",
    summary = "Sign in with a passkey: a new session, as a login opens one",
    request_body = PasskeySignInRequest,
    responses(
        (status = 200, description = "A new session, as `POST /v1/auth/login` answers (cookie transport likewise).", body = TokenResponse,
            headers(("set-cookie" = String, description = "Cookie transport only: `tessera_at`, `tessera_rt` and `tessera_csrf`."))),
        (status = 400, description = "`malformed_request`, `passkey_ceremony_invalid` (unknown, or answered already), `passkey_ceremony_expired`, `passkey_invalid` (malformed, or fails verification: signature, challenge, user verification), `passkey_wrong_origin`"),
        (status = 401, description = "`passkey_unknown` (registered to no account, or removed), `passkey_counter_regressed`"),
        (status = 403, description = "`email_not_verified`"),
        (status = 404, description = "`passkeys_disabled`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited` (per client IP, with logins)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.login_limit, "passkey", &client)?;
    let mut f = Fields::new(&body);
    f.only(&["ceremony", "credential", "transport"]);
    let ceremony = f.required_str("ceremony");
    let credential = f.optional_object("credential");
    if credential.is_none() {
        f.invalid("credential", "is required");
    }
    let transport = transport(&mut f);
    f.finish()?;
    let credential = credential.ok_or(ApiError::Malformed("credential is required"))?;
    let result = state
        .service
        .sign_in_with_passkey(ceremony, credential, transport, &client)
        .await;
    state
        .metrics
        .login(if result.is_ok() { "success" } else { "failure" });
    let grant = result?;
    Ok(token_response(&grant, state.cookie_secure))
}
