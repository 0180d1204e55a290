//! Second factors: the signed-in account's factors (`/v1/account/mfa/*`) and a login's second
//! step (`POST /v1/auth/mfa/verify`). The `mfa_required` answer every sign-in gives for an
//! account with a factor is in `answer.rs`, with the token response.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::answer::{no_store, token_response, with_status, TokenResponse};
use super::cookies::RequestCookies;
use super::error::ApiError;
use super::extract::{rate_limit, Authenticated, Client, Fields, JsonBody};
use super::AppState;
use crate::domain::{FieldError, Timestamp};
use crate::service::{FactorProof, FactorsView, HolderProof};

/// A second factor's method.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum MfaMethodName {
    /// A code of the authenticator app.
    Totp,
    /// One of the recovery codes.
    RecoveryCode,
    /// A passkey: `credential` instead of `code`.
    Passkey,
}

// The body `mfa/verify` reads (see `RegisterRequest` for why it is not deserialized).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct MfaVerifyRequest {
    /// The `challenge` of the `mfa_required` answer.
    #[schema(min_length = 1, max_length = 128)]
    challenge: String,
    method: MfaMethodName,
    /// The 6-digit code of the authenticator app, or a recovery code (not with `passkey`).
    #[schema(nullable = false, min_length = 1, max_length = 64)]
    code: Option<String>,
    /// With `passkey`: the `PublicKeyCredential` from `navigator.credentials.get`, as JSON
    /// (binary fields base64url), answering `POST /v1/auth/mfa/passkey/options`.
    #[schema(value_type = Option<Object>, nullable = false)]
    credential: Option<serde_json::Value>,
}

/// Reads `method` and `code` (or, for a passkey, `credential`).
fn proof(f: &mut Fields<'_>) -> Option<FactorProof> {
    let method = f.required_str("method");
    // A passkey answers with its assertion, not a code (`POST /v1/auth/mfa/passkey/options`).
    if method == "passkey" {
        let credential = f.optional_object("credential");
        if credential.is_none() {
            f.invalid("credential", "is required with method \"passkey\"");
        }
        return credential.map(|c| FactorProof::Passkey(c.clone()));
    }
    // Read only to be type-checked: a code's methods have no use for it.
    f.optional_object("credential");
    let code = f.required_str("code");
    if code.is_empty() || code.len() > 64 {
        f.invalid("code", "must be 1 to 64 characters");
    }
    let proof = FactorProof::parse(method, code);
    if proof.is_none() && !method.is_empty() {
        f.invalid("method", "must be \"totp\" or \"recovery_code\"");
    }
    proof
}

#[utoipa::path(
    post,
    path = "/v1/auth/mfa/verify",
    tag = "auth",
    summary = "A sign-in's second step: the challenge and a code give the session",
    request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "A new session, exactly as `POST /v1/auth/login` answers it (in the transport the login asked for).", body = TokenResponse,
            headers(("set-cookie" = String, description = "Cookie transport only: `tessera_at`, `tessera_rt` and `tessera_csrf`."))),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`mfa_challenge_invalid` (unknown, used, or used up by wrong codes), `mfa_challenge_expired`, `mfa_challenge_other_browser` (cookie transport: without the `tessera_mfa` cookie of the browser that signed in), `invalid_mfa_code`, `mfa_code_replayed`"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: per client IP, or the account is locked after repeated failures (wrong codes count)"),
        (status = 503, description = "`service_unavailable`"),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    rate_limit(&state, &state.login_limit, "mfa_verify", &client)?;
    let mut f = Fields::new(&body);
    f.only(&["challenge", "method", "code", "credential"]);
    let challenge = f.required_str("challenge");
    let proof = proof(&mut f);
    f.finish()?;
    let Some(proof) = proof else {
        return Err(vec![FieldError::new("method", "must be \"totp\" or \"recovery_code\"")].into());
    };
    let browser = RequestCookies::from_headers(&headers).mfa;
    let result = state
        .service
        .verify_mfa(challenge, proof, browser.as_deref(), &client)
        .await;
    state
        .metrics
        .login(if result.is_ok() { "success" } else { "failure" });
    Ok(token_response(&result?, state.cookie_secure))
}

/// The account's TOTP factor.
#[derive(Serialize, ToSchema)]
pub(super) struct TotpFactorBody {
    /// Confirmed with a first code (an enrolment not yet confirmed is no factor).
    enabled: bool,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// A passkey of the account.
#[derive(Serialize, ToSchema)]
pub(super) struct PasskeyBody {
    id: String,
    name: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

/// The second factors of the caller's account.
#[derive(Serialize, ToSchema)]
pub(super) struct FactorsResponse {
    /// `null` without TOTP.
    totp: Option<TotpFactorBody>,
    recovery_codes_left: u32,
    passkeys: Vec<PasskeyBody>,
}

impl From<FactorsView> for FactorsResponse {
    fn from(f: FactorsView) -> Self {
        FactorsResponse {
            totp: f.totp.map(|t| TotpFactorBody {
                enabled: t.enabled,
                created_at: t.created_at,
            }),
            recovery_codes_left: f.recovery_codes_left,
            passkeys: f
                .passkeys
                .into_iter()
                .map(|p| PasskeyBody {
                    id: p.id,
                    name: p.name,
                    created_at: p.created_at,
                })
                .collect(),
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/account/mfa",
    tag = "auth",
    summary = "The caller's second factors",
    responses(
        (status = 200, description = "TOTP, recovery codes left, passkeys.", body = FactorsResponse),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = []))
)]
pub async fn factors(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let factors = state.service.my_factors(&ctx).await?;
    Ok(no_store(FactorsResponse::from(factors)))
}

/// A TOTP enrolment: what goes into the authenticator app.
#[derive(Serialize, ToSchema)]
pub(super) struct TotpEnrolmentResponse {
    /// The secret in base32, for typing it in.
    secret: String,
    /// `otpauth://totp/...`, what the QR code holds.
    otpauth_uri: String,
    /// The URI as a QR code: an SVG document.
    qr_svg: String,
}

#[utoipa::path(
    post,
    path = "/v1/account/mfa/totp",
    tag = "auth",
    summary = "Start a TOTP enrolment (not on until confirmed)",
    responses(
        (status = 201, description = "A new secret; confirm it with a first code. Starting again replaces an unconfirmed one.", body = TotpEnrolmentResponse),
        (status = 401, description = "`invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 409, description = "`mfa_already_enabled`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn start_totp(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
) -> Result<Response, ApiError> {
    let e = state.service.start_totp(&ctx).await?;
    Ok(with_status(
        StatusCode::CREATED,
        TotpEnrolmentResponse {
            secret: e.secret.clone(),
            otpauth_uri: e.otpauth_uri.clone(),
            qr_svg: e.qr_svg.clone(),
        },
    ))
}

// The body `totp/confirm` reads.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TotpConfirmRequest {
    /// The authenticator app's current 6-digit code.
    #[schema(min_length = 1, max_length = 64)]
    code: String,
}

/// Recovery codes: shown once, never again.
#[derive(Serialize, ToSchema)]
pub(super) struct RecoveryCodesResponse {
    /// Ten single-use codes.
    recovery_codes: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/account/mfa/totp/confirm",
    tag = "auth",
    summary = "Confirm the TOTP enrolment with a first code: TOTP is on",
    request_body = TotpConfirmRequest,
    responses(
        (status = 200, description = "TOTP is on; the first recovery codes, shown once.", body = RecoveryCodesResponse),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_mfa_code`, `invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 408, description = "`request_timeout`"),
        (status = 409, description = "`mfa_already_enabled`, `mfa_not_enabled` (no enrolment started)"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn confirm_totp(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body);
    f.only(&["code"]);
    let code = f.required_str("code");
    if code.len() > 64 {
        f.invalid("code", "must be at most 64 characters");
    }
    f.finish()?;
    let codes = state.service.confirm_totp(&ctx, code, &client).await?;
    Ok(no_store(RecoveryCodesResponse {
        recovery_codes: codes.0,
    }))
}

// The body `DELETE totp`, `recovery-codes` and `reauthenticate` read.
/// Either `password`, or `code` (with `method`, `totp` by default). Changing factors without
/// either needs a recent sign-in; `reauthenticate` needs one of them.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ProveRequest {
    #[schema(nullable = false, min_length = 1, max_length = 1024)]
    password: Option<String>,
    /// With `code`: `totp` (the default) or `recovery_code`; `passkey` with `credential`.
    #[schema(nullable = false)]
    method: Option<MfaMethodName>,
    #[schema(nullable = false, min_length = 1, max_length = 64)]
    code: Option<String>,
    /// With `passkey`: the `PublicKeyCredential` from `navigator.credentials.get`, as JSON,
    /// answering `POST /v1/auth/reauthenticate/passkey/options`.
    #[schema(value_type = Option<Object>, nullable = false)]
    credential: Option<serde_json::Value>,
}

/// Reads a `ProveRequest` (`None`: no proof in it).
fn prove(body: &JsonBody) -> Result<Option<HolderProof>, ApiError> {
    let mut f = Fields::new(body);
    f.only(&["password", "method", "code", "credential"]);
    let password = f.optional_str("password");
    let method = f.optional_str("method");
    let credential = f.optional_object("credential");
    if method == Some("passkey") {
        if credential.is_none() {
            f.invalid("credential", "is required with method \"passkey\"");
        }
        if password.is_some() || f.optional_str("code").is_some() {
            f.invalid("credential", "send a passkey's credential alone");
        }
        f.finish()?;
        return Ok(credential.map(|c| HolderProof::Factor(FactorProof::Passkey(c.clone()))));
    }
    let code = f.optional_str("code");
    if password.is_some_and(|p| p.chars().count() > 1024) {
        f.invalid("password", "must be at most 1024 characters");
    }
    if code.is_some_and(|c| c.len() > 64) {
        f.invalid("code", "must be at most 64 characters");
    }
    f.finish()?;
    Ok(HolderProof::from_fields(password, method, code)?)
}

#[utoipa::path(
    delete,
    path = "/v1/account/mfa/totp",
    tag = "auth",
    summary = "Turn TOTP off (and its recovery codes), proving the password or a code",
    request_body = ProveRequest,
    responses(
        (status = 204, description = "TOTP is off."),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_credentials`, `invalid_mfa_code`, `mfa_code_replayed`, `invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport), `reauthentication_required`"),
        (status = 408, description = "`request_timeout`"),
        (status = 409, description = "`mfa_not_enabled`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: the account is locked after repeated failures"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn disable_totp(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let proof = prove(&body)?;
    state.service.disable_totp(&ctx, proof, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/account/mfa/recovery-codes",
    tag = "auth",
    summary = "A new set of recovery codes (the old set dies), proving the password or a code",
    request_body = ProveRequest,
    responses(
        (status = 200, description = "The new codes, shown once.", body = RecoveryCodesResponse),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_credentials`, `invalid_mfa_code`, `mfa_code_replayed`, `invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport), `reauthentication_required`"),
        (status = 408, description = "`request_timeout`"),
        (status = 409, description = "`mfa_not_enabled`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: the account is locked after repeated failures"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let proof = prove(&body)?;
    let codes = state
        .service
        .regenerate_recovery_codes(&ctx, proof, &client)
        .await?;
    Ok(no_store(RecoveryCodesResponse {
        recovery_codes: codes.0,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/auth/reauthenticate",
    tag = "auth",
    summary = "Prove it is still you (password or a second factor): a recent sign-in for sensitive changes",
    request_body = ProveRequest,
    responses(
        (status = 200, description = "The session's `auth_time` is now (and its `amr` says what was proved); fresh tokens saying so, the refresh token rotated as a password change does.", body = TokenResponse,
            headers(("set-cookie" = String, description = "Cookie transport only: fresh `tessera_at`, `tessera_rt` and `tessera_csrf`."))),
        (status = 400, description = "`malformed_request`"),
        (status = 401, description = "`invalid_credentials`, `invalid_mfa_code`, `mfa_code_replayed`, `invalid_token`, `token_expired`, `session_revoked`"),
        (status = 403, description = "`csrf_failed` (cookie transport)"),
        (status = 408, description = "`request_timeout`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 422, description = "`validation_failed`"),
        (status = 429, description = "`rate_limited`: the account is locked after repeated failures"),
        (status = 503, description = "`service_unavailable`"),
    ),
    security(("bearer" = []), ("access_cookie" = [], "csrf_header" = []))
)]
pub async fn reauthenticate(
    State(state): State<AppState>,
    Authenticated(ctx): Authenticated,
    Client(client): Client,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let Some(proof) = prove(&body)? else {
        return Err(vec![FieldError::new("password", "send either password or code")].into());
    };
    let grant = state.service.reauthenticate(&ctx, proof, &client).await?;
    Ok(token_response(&grant, state.cookie_secure))
}
